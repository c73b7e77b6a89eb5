// Bundle index.js for one platform with Metro's API (what `react-native bundle` calls).
const Metro = require("metro");

async function main() {
  const [platform, out] = process.argv.slice(2);
  const config = await Metro.loadConfig({ config: require.resolve("./metro.config.cjs") });
  await Metro.runBuild(config, { entry: "./index.js", platform, out, minify: true, dev: false });
}
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
