/**
 * OCSP responder throughput, in-process: N responses built and signed at the real clock.
 * Run: node --import tsx test/bench/ocsp-build.bench.ts [N]
 */

import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { CertID, id_pkix_ocsp_nonce, OCSPRequest, Request, TBSRequest } from "@peculiar/asn1-ocsp";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier, Extension } from "@peculiar/asn1-x509";
import { buildOcspResponse, createOcspAnswerer, parseOcspRequest } from "../../src/cp/ocsp/index.js";
import { computeIssuerHashes, type OcspCertStatus } from "../../src/shared/pki/ocsp/index.js";
import { systemClock } from "../../src/shared/time/index.js";
import { inventoryResolver, mintPki } from "../helpers/ocsp-fixture.js";

const N = Number(process.argv[2] ?? 2000);
const { ca, leaves } = await mintPki(3);
const statuses = new Map<string, OcspCertStatus>(leaves.map((l) => [l.serialHex, { kind: "good" }]));
const resolve = inventoryResolver([{ ca, statuses }]);

// An openssl-shaped request: one SHA-1 CertID and a 16-byte nonce.
const hashes = computeIssuerHashes(ca.certDer).sha1;
const request = Buffer.from(
  AsnConvert.serialize(
    new OCSPRequest({
      tbsRequest: new TBSRequest({
        requestList: [
          new Request({
            reqCert: new CertID({
              hashAlgorithm: new AlgorithmIdentifier({ algorithm: "1.3.14.3.2.26", parameters: null }),
              issuerNameHash: new OctetString(hashes.nameHash),
              issuerKeyHash: new OctetString(hashes.keyHash),
              serialNumber: new Uint8Array(Buffer.from(leaves[0]?.serialHex ?? "01", "hex")).buffer,
            }),
          }),
        ],
        requestExtensions: [
          new Extension({
            extnID: id_pkix_ocsp_nonce,
            extnValue: new OctetString(Buffer.concat([Buffer.from([0x04, 0x10]), randomBytes(16)])),
          }),
        ],
      }),
    }),
  ),
);

function rate(label: string, fn: () => void): void {
  for (let i = 0; i < 200; i++) fn(); // warm-up
  const start = performance.now();
  for (let i = 0; i < N; i++) fn();
  const ms = performance.now() - start;
  console.log(`${label.padEnd(44)} ${N} in ${ms.toFixed(0)} ms = ${Math.round((N * 1000) / ms)}/s`);
}

const parsed = parseOcspRequest(request);
let size = 0;
rate("buildOcspResponse (parsed request)", () => {
  size = buildOcspResponse({ request: parsed, resolve, clock: systemClock }).length;
});
rate("parseOcspRequest + buildOcspResponse", () => {
  buildOcspResponse({ request: parseOcspRequest(request), resolve, clock: systemClock });
});

const answer = createOcspAnswerer({ resolve, clock: systemClock });
for (let i = 0; i < 200; i++) await answer(request);
const start = performance.now();
for (let i = 0; i < N; i++) await answer(request);
const ms = performance.now() - start;
console.log(`${"createOcspAnswerer (awaited one at a time)".padEnd(44)} ${N} in ${ms.toFixed(0)} ms = ${Math.round((N * 1000) / ms)}/s`);
console.log(`response size ${size} bytes (CA certificate embedded)`);
