/** Object identifiers and fixed DER values shared by the certificate builders and parsers. */
import * as asn1X509 from "@peculiar/asn1-x509";
import type { ExtendedKeyUsageName } from "./profiles.js";

/** RFC 7633 TLS Feature extension ("must-staple" when it lists status_request). */
export const TLS_FEATURE_OID = "1.3.6.1.5.5.7.1.24";
/** TLS extension number of status_request (RFC 6066), the feature that means must-staple. */
export const TLS_FEATURE_STATUS_REQUEST = 5;
/** DER of `SEQUENCE { INTEGER 5 }`: the whole TLS Feature value for must-staple. */
export const MUST_STAPLE_DER = Uint8Array.from([0x30, 0x03, 0x02, 0x01, 0x05]);

export const EKU_OIDS: Record<ExtendedKeyUsageName, string> = {
  serverAuth: asn1X509.id_kp_serverAuth,
  clientAuth: asn1X509.id_kp_clientAuth,
};

/** EKU display name: "serverAuth"/"clientAuth" for the two we issue, the dotted OID otherwise. */
export function ekuName(oid: string): string {
  if (oid === asn1X509.id_kp_serverAuth) return "serverAuth";
  if (oid === asn1X509.id_kp_clientAuth) return "clientAuth";
  return oid;
}
