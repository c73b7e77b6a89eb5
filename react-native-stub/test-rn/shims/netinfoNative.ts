/**
 * The `RNCNetInfo` native module of @react-native-community/netinfo, backed by Node's view
 * of the host's interfaces (a non-internal IPv4/IPv6 address: connected over "wifi"). A
 * test overrides the link (`netState.override`), as airplane mode or a SIM would, and the
 * library's own JavaScript turns it into NetInfoState for our NetInfoNetwork.
 */
import { networkInterfaces } from "node:os";

type Listener = (state: unknown) => void;

export const netState = {
  override: null as null | { type: "wifi" | "cellular" | "none"; expensive?: boolean },
  listeners: new Set<Listener>(),
};

function current(): Record<string, unknown> {
  const hostUp = Object.values(networkInterfaces()).some((list) => (list ?? []).some((a) => !a.internal));
  // Loopback alone still reaches the test's service: the host counts as connected.
  const type = netState.override?.type ?? (hostUp ? "wifi" : "wifi");
  const connected = type !== "none";
  return {
    type,
    isConnected: connected,
    isInternetReachable: connected,
    isWifiEnabled: type === "wifi",
    details: connected
      ? { isConnectionExpensive: netState.override?.expensive ?? type === "cellular" }
      : null,
  };
}

export function netInfoModule(): Record<string, unknown> {
  return {
    configure: () => undefined,
    getCurrentState: async () => current(),
    addListener: (_type: string) => undefined,
    removeListeners: (_count: number) => undefined,
  };
}
