/** A consumer app, as the README documents it: the package's React entry only. */
import { useMemo } from "react";
import { Platform, Text, View } from "react-native";

import { createReactNativeClient, useAnomalyModel } from "@modelsync/react-native-client/react";
import type { SyncResult } from "@modelsync/react-native-client";

import shippedRoot from "./root.json";

export default function App(): React.JSX.Element {
  const client = useMemo(
    () =>
      createReactNativeClient({
        server: "https://modelsync.example.com",
        channel: "stable",
        deviceId: "pump-0042",
        platform: Platform.OS === "ios" ? "ios" : "android",
        shippedRoot,
      }),
    [],
  );
  const model = useAnomalyModel(client, { model: "fleet-iforest" });
  const report = (r: SyncResult | null): string => r?.outcome ?? "failed";
  return (
    <View>
      <Text onPress={() => void model.sync().then(report)}>
        {model.status} v{model.version ?? "-"} {model.providers.join(",")}
      </Text>
    </View>
  );
}
