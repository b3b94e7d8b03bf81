/**
 * JSON with a nesting cap: the attack is a tiny body nested thousands deep, cheap to send and
 * fatal to anything that recurses over the parsed value (JSON.stringify, zod, the logger).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isAuthNexusError } from "../../src/shared/errors/index.js";
import { canonicalJson, jsonNestingDepth, parseJson } from "../../src/shared/json/index.js";

const nested = (depth: number) => `${"[".repeat(depth)}${"]".repeat(depth)}`;

describe("parseJson", () => {
  it("measures nesting outside strings only, escapes included", () => {
    assert.equal(jsonNestingDepth("1", 10), 0);
    assert.equal(jsonNestingDepth('{"a":[1,{"b":[]}]}', 10), 4);
    assert.equal(jsonNestingDepth('"[[[[[[[["', 2), 0, "brackets inside a string do not count");
    assert.equal(jsonNestingDepth('["\\"[[[[", []]', 10), 2, "an escaped quote does not end the string");
    assert.equal(jsonNestingDepth('["\\\\", [[]]]', 10), 3, "an escaped backslash does not escape the quote after it");
  });

  it("stops counting as soon as the cap is passed", () => {
    assert.equal(jsonNestingDepth(nested(1_000_000), 64), 65);
  });

  it("takes JSON up to the cap and refuses one level more with JSON_TOO_DEEP", () => {
    assert.deepEqual(parseJson(nested(64), 64), JSON.parse(nested(64)));
    assert.throws(
      () => parseJson(nested(65), 64),
      (error) => isAuthNexusError(error, "JSON_TOO_DEEP") && error.status === 400,
    );
    assert.throws(
      () => parseJson(nested(5000), 64),
      (error) => isAuthNexusError(error, "JSON_TOO_DEEP"),
    );
  });

  it("refuses text that is not JSON with MALFORMED_JSON", () => {
    for (const text of ["{", "[1,]", "undefined", "{'a':1}", ""]) {
      assert.throws(
        () => parseJson(text, 64),
        (error) => isAuthNexusError(error, "MALFORMED_JSON"),
        text,
      );
    }
  });
});

describe("canonicalJson", () => {
  it("sorts keys at every level, so equal values give equal text", () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [2, { z: 1, y: 2 }], c: null } }), '{"a":{"c":null,"d":[2,{"y":2,"z":1}]},"b":1}');
    assert.equal(canonicalJson({ x: 1, y: 2 }), canonicalJson({ y: 2, x: 1 }));
  });
});
