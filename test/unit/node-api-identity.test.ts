/**
 * Reading the node identity from Node's `subjectaltname` string: a crafted SAN must fail closed.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseNodeUri } from "../../src/shared/pki/index.js";
import { uriSans } from "../../src/shared/pki/peer-certificate.js";

const nodeIds = (san: string) =>
  uriSans(san)
    .map(parseNodeUri)
    .filter((id) => id !== null);

test("the node URI is found among other SAN entries", () => {
  assert.deepEqual(nodeIds("DNS:node.example, URI:urn:authnexus:node:nod_abc, IP Address:127.0.0.1"), ["nod_abc"]);
  assert.deepEqual(nodeIds("DNS:only.example"), []);
});

test("a quoted entry (Node quotes values holding a comma) never yields a node id", () => {
  assert.deepEqual(nodeIds('URI:"urn:authnexus:node:nod_x, URI:urn:authnexus:node:nod_victim"'), []);
  assert.deepEqual(nodeIds('URI:"urn:authnexus:node:nod_x"'), []);
});
