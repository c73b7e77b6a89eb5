/**
 * A minimal field-device screen: which model version is serving (and from where), how the
 * last sync went, and the anomaly score of a sample of this device's telemetry.
 *
 * The server URL, enrollment token and root come from the app's build configuration; the
 * root shipped here is what every later root and index is checked against (check 1.1).
 */
import { useEffect, useMemo, useState } from "react";
import { Button, Platform, StyleSheet, Text, View } from "react-native";

import { type ReactNativeClientOptions, type Score, createReactNativeClient, useAnomalyModel } from "../src/react";
// Signed by the published test-vector keys: replace with your own keys/root.json.
import shippedRoot from "./root.example.json";

const SERVER = "https://modelsync.example.com";
const ENROLLMENT_TOKEN = "mse_replace-with-your-fleet-enrollment-token";
const DEVICE_ID = "pump-0042";

/** One row of telemetry in the manifest's feature order (battery, CPU, memory, …). */
const SAMPLE: number[] = [38.5, 0.62, 0.71, 0.44, 3, 0, 1, 0.12, 2.5, 210, 0.03, 5];

/** What the app is built with; a test (test-rn/app.test.tsx) overrides the server, the
 * root, the state directory or the network. */
export interface AppConfig extends ReactNativeClientOptions {
  enrollmentToken: string;
}

function defaultConfig(): AppConfig {
  return {
    server: SERVER,
    channel: "stable",
    deviceId: DEVICE_ID,
    platform: Platform.OS === "ios" ? "ios" : "android",
    appVersion: "1.0.0",
    shippedRoot,
    storageBudgetBytes: 64 * 1024 * 1024,
    enrollmentToken: ENROLLMENT_TOKEN,
  };
}

export default function App({ config }: { config?: Partial<AppConfig> }): React.JSX.Element {
  const [client, enrollmentToken] = useMemo(() => {
    const { enrollmentToken: token, ...options } = { ...defaultConfig(), ...config };
    return [createReactNativeClient(options), token] as const;
    // The client lives as long as the app: a new config means a new app start.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  const [registered, setRegistered] = useState(false);
  useEffect(() => {
    void (async () => {
      if ((await client.identity()) === null) await client.register(enrollmentToken);
      setRegistered(true);
    })().catch(() => setRegistered(false));
  }, [client, enrollmentToken]);

  const model = useAnomalyModel(client, { model: "fleet-iforest", syncOnMount: registered });
  const [score, setScore] = useState<Score | null>(null);
  useEffect(() => {
    if (model.status !== "ready") return;
    model
      .run(SAMPLE)
      .then((s) => setScore(s[0] ?? null))
      .catch(() => setScore(null));
  }, [model.status, model.version, model.run]);

  const progress = model.progress;
  return (
    <View style={styles.screen}>
      <Text style={styles.title}>Field anomaly check</Text>
      <View style={styles.row}>
        <Text style={styles.label}>Model</Text>
        <Text>
          {model.version === null ? "none" : `v${model.version}`} ({model.source ?? "—"}, {model.providers.join(" → ") || "—"})
        </Text>
      </View>
      <View style={styles.row}>
        <Text style={styles.label}>Sync</Text>
        <Text>
          {model.syncState}
          {progress?.phase === "download" && progress.total
            ? ` ${Math.round((100 * (progress.received ?? 0)) / progress.total)}%`
            : ""}
        </Text>
      </View>
      <View style={styles.row}>
        <Text style={styles.label}>Score</Text>
        <Text style={score?.anomaly ? styles.anomaly : undefined}>
          {score === null ? "—" : `${score.score.toFixed(4)} ${score.anomaly ? "ANOMALY" : "normal"}`}
        </Text>
      </View>
      {model.staged !== null ? <Text>v{model.staged} from the next start</Text> : null}
      {model.error !== null ? <Text style={styles.error}>{model.error}</Text> : null}
      <Button title="Sync now" onPress={() => void model.sync()} disabled={!registered} />
    </View>
  );
}

const styles = StyleSheet.create({
  screen: { flex: 1, padding: 24, gap: 12 },
  title: { fontSize: 22, fontWeight: "600" },
  row: { flexDirection: "row", gap: 12 },
  label: { width: 64, fontWeight: "600" },
  anomaly: { color: "#b00020", fontWeight: "700" },
  error: { color: "#b00020" },
});
