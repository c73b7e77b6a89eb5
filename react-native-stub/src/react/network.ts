/** Network state from @react-native-community/netinfo. "Metered" is what the OS says
 * (isConnectionExpensive), and any cellular link: field devices on a SIM pay per byte. */
import NetInfo from "@react-native-community/netinfo";

import type { NetworkMonitor, NetworkStatus } from "../core/ports";

export class NetInfoNetwork implements NetworkMonitor {
  async current(): Promise<NetworkStatus> {
    const state = await NetInfo.fetch();
    const details = state.details as { isConnectionExpensive?: boolean } | null;
    return {
      connected: state.isConnected === true && state.isInternetReachable !== false,
      metered: state.type === "cellular" || details?.isConnectionExpensive === true,
    };
  }
}
