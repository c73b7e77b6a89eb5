/**
 * React Native's jest environment, sharing the host's typed-array constructors with the
 * test's sandbox: onnxruntime-node's binding checks tensor data against the constructors
 * of the realm it was loaded in, and refuses a sandbox BigInt64Array ("A int64 tensor's
 * data must be type of function BigInt64Array()").
 */
const ReactNativeEnv = require("react-native/jest/react-native-env.js");

const SHARED = [
  "ArrayBuffer", "SharedArrayBuffer", "DataView",
  "Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array",
  "Int32Array", "Uint32Array", "Float32Array", "Float64Array", "BigInt64Array", "BigUint64Array",
];

module.exports = class SharedTypedArraysEnv extends ReactNativeEnv {
  constructor(config, context) {
    super(config, context);
    for (const name of SHARED) this.global[name] = globalThis[name];
  }
};
