import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { modelFilePath } from "../src/core/paths";

describe("model file paths for onnxruntime-react-native", () => {
  it("strips file:// and decodes percent-escapes (iOS Application Support)", () => {
    assert.equal(
      modelFilePath("file:///var/mobile/Containers/Data/Application/AB/Library/Application%20Support/m.ort"),
      "/var/mobile/Containers/Data/Application/AB/Library/Application Support/m.ort",
    );
  });
  it("accepts file:/ with one slash and file://localhost", () => {
    assert.equal(modelFilePath("file:/data/user/0/app/files/m.ort"), "/data/user/0/app/files/m.ort");
    assert.equal(modelFilePath("file://localhost/tmp/m.ort"), "/tmp/m.ort");
  });
  it("leaves plain absolute paths alone, spaces included", () => {
    assert.equal(modelFilePath("/data/user/0/app/files/My Models/m.ort"), "/data/user/0/app/files/My Models/m.ort");
  });
  it("refuses remote URLs, relative paths and bad escapes", () => {
    assert.throws(() => modelFilePath("https://cdn.example.com/m.ort"), /not a local file/);
    assert.throws(() => modelFilePath("models/m.ort"), /absolute/);
    assert.throws(() => modelFilePath("file:///tmp/%E0%A4%A.ort"), /malformed/);
  });
});
