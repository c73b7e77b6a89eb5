/** Node adapters: for tests, simulators and command-line tools. */
export { NodeStorage } from "./storage";
export { StaticNetwork } from "./network";
export { NodeOrtRunner, NODE_PROVIDERS, openNodeSession } from "./ortRunner";
export { installFromPackFile, readPackFile } from "./pack";
