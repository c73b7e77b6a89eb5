// Metro and jest compile the app side with React Native's own babel preset.
module.exports = { presets: ["module:@react-native/babel-preset"] };
