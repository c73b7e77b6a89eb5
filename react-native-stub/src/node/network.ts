/** A network state that is what you set: Node has no Wi-Fi/cellular notion. */
import type { NetworkMonitor, NetworkStatus } from "../core/ports";

export class StaticNetwork implements NetworkMonitor {
  constructor(public status: NetworkStatus = { connected: true, metered: false }) {}

  current(): Promise<NetworkStatus> {
    return Promise.resolve({ ...this.status });
  }
}
