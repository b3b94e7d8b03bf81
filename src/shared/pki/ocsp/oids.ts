/** Content octets of the OBJECT IDENTIFIERs OCSP uses, compared byte for byte before any decoding. */
export const OID_CONTENT = {
  /** 1.3.14.3.2.26 */
  sha1: Buffer.from("2b0e03021a", "hex"),
  /** 2.16.840.1.101.3.4.2.1 */
  sha256: Buffer.from("608648016503040201", "hex"),
  /** 1.3.6.1.5.5.7.48.1.2 id-pkix-ocsp-nonce */
  nonce: Buffer.from("2b0601050507300102", "hex"),
  /** 1.3.6.1.5.5.7.48.1.1 id-pkix-ocsp-basic */
  basic: Buffer.from("2b0601050507300101", "hex"),
  /** 1.2.840.10045.4.3.2 ecdsa-with-SHA256 */
  ecdsaWithSha256: Buffer.from("2a8648ce3d040302", "hex"),
  /** 1.2.840.113549.1.1.11 sha256WithRSAEncryption */
  sha256WithRsa: Buffer.from("2a864886f70d01010b", "hex"),
} as const;
