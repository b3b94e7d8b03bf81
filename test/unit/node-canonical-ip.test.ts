/**
 * The node compares client addresses with blacklist entries in the entries' canonical spelling
 * (docs/admin-api.md, "Security"): a listener bound to "::" sees IPv4 clients as IPv4-mapped
 * IPv6 addresses, which must match the IPv4 entry.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { canonicalIp } from "../../src/node/business/security-state.js";

test("IPv4 stays as it is; IPv4-mapped IPv6 becomes its IPv4; IPv6 is lower case and compressed", () => {
  assert.equal(canonicalIp("203.0.113.7"), "203.0.113.7");
  assert.equal(canonicalIp("::ffff:203.0.113.7"), "203.0.113.7");
  assert.equal(canonicalIp("::FFFF:cb00:7107"), "203.0.113.7");
  assert.equal(canonicalIp("2001:DB8:0:0:0:0:0:1"), "2001:db8::1");
  assert.equal(canonicalIp("::1"), "::1");
  // Not an address (a socket that lost its peer): compared as it is, never matching an entry.
  assert.equal(canonicalIp("unknown"), "unknown");
});
