/** Default entry: the platform-neutral core. React Native apps import
 * "@modelsync/react-native-client/src/react"; Node tools import "src/node". */
export * from "./core";
