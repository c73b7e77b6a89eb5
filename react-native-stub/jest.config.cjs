/**
 * The React Native test project: React Native's own jest preset and
 * @testing-library/react-native, with the real JavaScript of onnxruntime-react-native,
 * @react-native-community/netinfo and @dr.pogodin/react-native-fs running over shims of
 * their native modules backed by Node (test-rn/shims), against the real Python service.
 */
module.exports = {
  preset: "react-native",
  rootDir: __dirname,
  testMatch: ["<rootDir>/test-rn/**/*.test.ts?(x)"],
  // ESM-only dependencies (@noble, @scure, canonicalize, fzstd) and packages shipping
  // TypeScript or untranspiled JS must go through babel like the app's own code.
  transformIgnorePatterns: [
    "node_modules/(?!((jest-)?react-native|@react-native(-community)?|@dr\\.pogodin|onnxruntime-react-native|@noble|@scure|canonicalize|fzstd)/)",
  ],
  testEnvironment: "<rootDir>/test-rn/environment.cjs",
  setupFiles: ["<rootDir>/test-rn/shims/install.ts"],
  testTimeout: 240000,
};
