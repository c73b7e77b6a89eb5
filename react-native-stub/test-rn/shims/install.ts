/**
 * Native modules for the app's dependencies, installed before any test module loads
 * (jest setupFiles, after React Native's own setup): TurboModules through the
 * `__turboModuleProxy` React Native's TurboModuleRegistry consults first, and
 * onnxruntime-react-native's legacy `Onnxruntime` module whose install() puts the JSI
 * `OrtApi` on the global object, as the C++ does on a phone.
 */
import { NativeModules } from "react-native";

import { fsModule } from "./fsNative";
import { netInfoModule } from "./netinfoNative";
import { installOrtApi } from "./ortJsi";

const turbo: Record<string, unknown> = { ReactNativeFs: fsModule(), RNCNetInfo: netInfoModule() };
(globalThis as { __turboModuleProxy?: unknown }).__turboModuleProxy = (name: string) => turbo[name] ?? null;

(NativeModules as Record<string, unknown>).Onnxruntime = {
  install: () => {
    installOrtApi();
    return true;
  },
  ORT_EXTENSIONS_PATH: undefined,
};
