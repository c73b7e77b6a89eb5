/** Cohort rules (docs/targeting.md "Cohort rules"): which devices a channel-index entry is
 * meant for. The device evaluates the rule on its own attributes and the service evaluates
 * it for its statistics (packager/cohort.py), so this is the Python code line for line and
 * ../tests/vectors/cohort.json holds both to the same verdicts and messages. A fixed tree
 * of JSON objects, never an expression string: nothing to eval. Parsing is strict (a node
 * this version does not understand is refused, not half-read); evaluation is total (odd
 * attributes make a comparison false, never throw). */
import { utf8ToBytes } from "./bytes";
import { canonicalText, isWellFormed } from "./canonical";
import { FormatError } from "./errors";

export const MAX_DEPTH = 8;
export const MAX_NODES = 64;
export const MAX_RULE_BYTES = 4096;
export const MAX_RULES = 16;
export const MAX_VALUES = 64;
/** Characters are code points, as Python counts them, not UTF-16 units. */
export const MAX_TEXT = 128;

export const VERSION_ATTRIBUTES = ["os_version", "app_version", "ort_version"] as const;
export const ATTRIBUTES = ["platform", "os_version", "app_version", "ort_version", "hardware_class", "site"] as const;
export type AttributeName = (typeof ATTRIBUTES)[number];
const LABEL_KEY = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const LABEL_KEY_TEXT = "^[a-z0-9][a-z0-9_.-]{0,62}$";
const VERSION = /^[0-9]{1,6}(?:\.[0-9]{1,6}){0,3}$/;
const VERSION_TEXT = "1 to 4 dot-separated numbers of 1 to 6 digits, e.g. 14.2.1";
const KINDS = ["all", "any", "not", "attr", "label"] as const;
const OPS = ["eq", "in", "gte", "lt", "exists"] as const;

/** A version's comparison key: four numbers, missing components 0. */
export type Version = readonly [number, number, number, number];

export type Rule =
  | { readonly kind: "all" | "any"; readonly rules: readonly Rule[] }
  | { readonly kind: "not"; readonly rule: Rule }
  | {
      readonly kind: "attr";
      readonly attr: AttributeName;
      readonly op: "eq" | "in" | "gte" | "lt";
      /** eq, gte, lt: one; in: 1..64, as written. */
      readonly values: readonly string[];
      /** The values' keys on a version attribute, else null. */
      readonly versions: readonly Version[] | null;
    }
  | {
      readonly kind: "label";
      readonly key: string;
      readonly op: "eq" | "in" | "exists";
      /** eq: one; in: 1..64, as written; exists: none. */
      readonly values: readonly string[];
    };

type Json = Record<string, unknown>;

/** The comparison key of a dotted version ("14" and "14.0" are one key), or null for
 * anything that is not a version, a non-string included. */
export function parseVersion(text: unknown): Version | null {
  if (typeof text !== "string" || !VERSION.test(text)) return null;
  const parts = text.split(".").map((p) => Number.parseInt(p, 10));
  while (parts.length < 4) parts.push(0);
  return Object.freeze(parts) as unknown as Version;
}

function sameVersion(a: Version, b: Version): boolean {
  return a[0] === b[0] && a[1] === b[1] && a[2] === b[2] && a[3] === b[3];
}

function compareVersions(a: Version, b: Version): number {
  for (let i = 0; i < 4; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  return 0;
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function has(obj: Json, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** A name or value as a message shows it: one line, at most 40 characters. */
function quote(value: string): string {
  const chars = Array.from(JSON.stringify(value).slice(1, -1));
  return chars.length > 40 ? `'${chars.slice(0, 40).join("")}…'` : `'${chars.join("")}'`;
}

function article(kind: string): string {
  return "aeiou".includes(kind[0] as string) ? `an ${kind}` : `a ${kind}`;
}

function fail(message: string): never {
  throw new FormatError(message);
}

/** Sorted by code point, as Python sorts, so a message does not depend on key order. */
function sortedKeys(keys: string[]): string[] {
  return keys.sort((a, b) => {
    const x = Array.from(a, (c) => c.codePointAt(0) as number);
    const y = Array.from(b, (c) => c.codePointAt(0) as number);
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      if (x[i] !== y[i]) return (x[i] as number) - (y[i] as number);
    }
    return x.length - y.length;
  });
}

class Parser {
  private nodes = 0;

  node(obj: unknown, path: string, depth: number): Rule {
    if (depth > MAX_DEPTH) fail(`${path}: nested deeper than ${MAX_DEPTH} levels`);
    if (++this.nodes > MAX_NODES) fail(`${path}: more than ${MAX_NODES} nodes in one rule`);
    if (!isObject(obj)) fail(`${path}: expected a rule object, got ${typeName(obj)}`);
    const kinds = KINDS.filter((k) => has(obj, k));
    if (kinds.length === 0) fail(`${path}: not a rule node: expected one of the keys ${KINDS.join(", ")}`);
    if (kinds.length > 1) {
      fail(`${path}: more than one node kind (${kinds.map(quote).join(", ")}); a node has exactly one`);
    }
    const kind = kinds[0] as (typeof KINDS)[number];
    if (kind === "attr") return attrNode(obj, path);
    if (kind === "label") return labelNode(obj, path);
    const extra = sortedKeys(Object.keys(obj).filter((k) => k !== kind));
    if (extra.length > 0) fail(`${path}: unexpected key ${quote(extra[0] as string)} in ${article(kind)} node`);
    if (kind === "not") return Object.freeze({ kind, rule: this.node(obj.not, `${path}.not`, depth + 1) });
    const items = obj[kind];
    if (!Array.isArray(items)) fail(`${path}: '${kind}' must be an array of rules, got ${typeName(items)}`);
    if (items.length === 0) fail(`${path}: '${kind}' is empty; it takes 1 to ${MAX_RULES} rules`);
    if (items.length > MAX_RULES) fail(`${path}: '${kind}' has ${items.length} rules; it takes at most ${MAX_RULES}`);
    const rules = items.map((r: unknown, i) => this.node(r, `${path}.${kind}[${i}]`, depth + 1));
    return Object.freeze({ kind, rules: Object.freeze(rules) });
  }
}

function operator(obj: Json, kind: "attr" | "label", path: string, takes: readonly string[]): string {
  const extra = sortedKeys(Object.keys(obj).filter((k) => k !== kind && !(OPS as readonly string[]).includes(k)));
  if (extra.length > 0) fail(`${path}: unexpected key ${quote(extra[0] as string)} in ${article(kind)} node`);
  const ops = OPS.filter((k) => has(obj, k));
  if (ops.length === 0) fail(`${path}: no operator; ${article(kind)} node takes one of ${takes.join(", ")}`);
  if (ops.length > 1) {
    fail(
      `${path}: more than one operator (${ops.map(quote).join(", ")}); a node takes exactly one` +
        " (a range is an all of a gte and a lt)",
    );
  }
  return ops[0] as string;
}

function attrNode(obj: Json, path: string): Rule {
  const name = obj.attr;
  if (typeof name !== "string") fail(`${path}: 'attr' must be a string naming an attribute, got ${typeName(name)}`);
  if (!(ATTRIBUTES as readonly string[]).includes(name)) {
    const hint = name === "labels" ? '; a label is matched by {"label": KEY, ...}' : "";
    fail(`${path}: unknown attribute ${quote(name)}; known: ${ATTRIBUTES.join(", ")}${hint}`);
  }
  const op = operator(obj, "attr", path, ["eq", "in", "gte", "lt"]) as "eq" | "in" | "gte" | "lt" | "exists";
  if (op === "exists") fail(`${path}: 'exists' is for labels; an attr node takes one of eq, in, gte, lt`);
  const isVersion = (VERSION_ATTRIBUTES as readonly string[]).includes(name);
  if ((op === "gte" || op === "lt") && !isVersion) {
    fail(
      `${path}: '${op}' compares versions and ${quote(name)} is not a version attribute` +
        ` (${VERSION_ATTRIBUTES.join(", ")})`,
    );
  }
  const values = operands(obj, op, path, 1);
  const attr = name as AttributeName;
  if (!isVersion) return Object.freeze({ kind: "attr", attr, op, values, versions: null });
  const versions: Version[] = [];
  values.forEach((value, i) => {
    const where = op === "in" ? `${path}.in[${i}]: value` : `${path}: '${op}' value`;
    const key = parseVersion(value);
    if (key === null) fail(`${where} ${quote(value)} is not a version (${VERSION_TEXT})`);
    const first = versions.findIndex((v) => sameVersion(v, key));
    if (first >= 0) {
      fail(`${where} ${quote(value)} duplicates in[${first}] ${quote(values[first] as string)} as a version`);
    }
    versions.push(key);
  });
  return Object.freeze({ kind: "attr", attr, op, values, versions: Object.freeze(versions) });
}

function labelNode(obj: Json, path: string): Rule {
  const key = obj.label;
  if (typeof key !== "string") fail(`${path}: 'label' must be a string, got ${typeName(key)}`);
  if (!LABEL_KEY.test(key)) fail(`${path}: label key ${quote(key)} does not match ${LABEL_KEY_TEXT}`);
  const op = operator(obj, "label", path, ["eq", "in", "exists"]);
  if (op === "gte" || op === "lt") {
    fail(`${path}: '${op}' compares versions; a label node takes one of eq, in, exists`);
  }
  if (op === "exists") {
    const got = obj.exists;
    if (got !== true) {
      const shown = got === false ? "false" : typeName(got);
      fail(`${path}: 'exists' must be true, got ${shown}; absence is a not of exists`);
    }
    return Object.freeze({ kind: "label", key, op, values: Object.freeze([]) });
  }
  return Object.freeze({ kind: "label", key, op: op as "eq" | "in", values: operands(obj, op, path, 0) });
}

/** The strings an eq / in / gte / lt compares with: each one a device could declare
 * (well-formed, minLength..128 characters), an in's distinct, 1 to 64 of them. */
function operands(obj: Json, op: string, path: string, minLength: number): readonly string[] {
  const raw = obj[op];
  if (op !== "in") {
    if (typeof raw !== "string") fail(`${path}: '${op}' must be a string, got ${typeName(raw)}`);
    checkText(raw, `${path}: '${op}' value`, minLength);
    return Object.freeze([raw]);
  }
  if (!Array.isArray(raw)) fail(`${path}: 'in' must be an array of strings, got ${typeName(raw)}`);
  if (raw.length === 0) fail(`${path}: 'in' is empty; it takes 1 to ${MAX_VALUES} strings`);
  if (raw.length > MAX_VALUES) fail(`${path}: 'in' has ${raw.length} strings; it takes at most ${MAX_VALUES}`);
  const seen = new Map<string, number>();
  raw.forEach((value: unknown, i) => {
    if (typeof value !== "string") fail(`${path}.in[${i}]: expected a string, got ${typeName(value)}`);
    checkText(value, `${path}.in[${i}]: value`, minLength);
    const first = seen.get(value);
    if (first !== undefined) fail(`${path}.in[${i}]: value ${quote(value)} duplicates in[${first}]`);
    seen.set(value, i);
  });
  return Object.freeze([...(raw as string[])]);
}

function checkText(value: string, where: string, minLength: number): void {
  // no UTF-8 form, so no canonical JSON and no signature over it
  if (!isWellFormed(value)) fail(`${where} is not well-formed Unicode (a lone surrogate)`);
  const n = codePoints(value);
  if (n < minLength) fail(`${where} is empty`);
  if (n > MAX_TEXT) fail(`${where} is ${n} characters; at most ${MAX_TEXT}`);
}

/** The rule a JSON value spells, or a FormatError naming the offending node's path. */
export function parseRule(obj: unknown): Rule {
  const rule = new Parser().node(obj, "rule", 1);
  const size = utf8ToBytes(canonicalText(ruleJson(rule))).length;
  if (size > MAX_RULE_BYTES) fail(`rule: canonical JSON is ${size} bytes, over the ${MAX_RULE_BYTES}-byte limit`);
  return rule;
}

/** The rule as JSON, as it is signed: exactly the object it was parsed from. */
export function ruleJson(rule: Rule): Json {
  switch (rule.kind) {
    case "all":
    case "any":
      return { [rule.kind]: rule.rules.map(ruleJson) };
    case "not":
      return { not: ruleJson(rule.rule) };
    case "attr":
      return { attr: rule.attr, [rule.op]: rule.op === "in" ? [...rule.values] : rule.values[0] };
    case "label":
      if (rule.op === "exists") return { label: rule.key, exists: true };
      return { label: rule.key, [rule.op]: rule.op === "in" ? [...rule.values] : rule.values[0] };
  }
}

/** Whether a device with these attributes is in the rule's cohort. Total: an absent or
 * ill-typed attribute (or attributes that are not an object at all) makes each comparison
 * on it false, and `not` turns that false into true. */
export function matches(rule: Rule, attributes: unknown): boolean {
  return evaluate(rule, isObject(attributes) ? attributes : {});
}

function own(obj: Json, key: string): unknown {
  // own properties only: a label named "constructor" is not Object.prototype's
  return has(obj, key) ? obj[key] : undefined;
}

function evaluate(rule: Rule, attrs: Json): boolean {
  switch (rule.kind) {
    case "all":
      return rule.rules.every((r) => evaluate(r, attrs));
    case "any":
      return rule.rules.some((r) => evaluate(r, attrs));
    case "not":
      return !evaluate(rule.rule, attrs);
    case "attr": {
      const value = own(attrs, rule.attr);
      if (typeof value !== "string") return false;
      if (rule.versions === null) return rule.values.includes(value);
      const key = parseVersion(value);
      if (key === null) return false;
      const bound = rule.versions[0] as Version;
      if (rule.op === "gte") return compareVersions(key, bound) >= 0;
      if (rule.op === "lt") return compareVersions(key, bound) < 0;
      return rule.versions.some((v) => sameVersion(v, key));
    }
    case "label": {
      const labels = own(attrs, "labels");
      const label = isObject(labels) ? own(labels, rule.key) : undefined;
      if (typeof label !== "string") return false;
      return rule.op === "exists" || rule.values.includes(label);
    }
  }
}
