import { AuthNexusError } from "../../shared/errors/index.js";
import { openSecret } from "../../shared/pki/index.js";
import type { CpContext } from "./context.js";
import { leafKeySecretName } from "./pki-inventory.js";

/** What the node API listener (9091) needs: its own certificate and the CA it trusts for nodes. */
export interface CpTlsIdentity {
  certPem: string;
  keyPem: string;
  /** cp_server_ca, appended to the chain so nodes can verify against their bundle. */
  serverCaPem: string;
  /** cp_node_client_ca: the only issuer accepted for node client certificates. */
  nodeClientCaPem: string;
}

export async function loadCpTlsIdentity(ctx: CpContext): Promise<CpTlsIdentity> {
  const now = ctx.clock.now();
  const cert = await ctx.controlDb
    .selectFrom("certificates")
    .select(["id", "cert_pem"])
    .where("purpose", "=", "cp_server")
    .where("status", "=", "valid")
    .where("not_after", ">", now)
    .orderBy("not_after", "desc")
    .executeTakeFirst();
  if (!cert) throw new AuthNexusError("PKI_NOT_INITIALISED", { message: "No valid CP server certificate in the inventory." });
  const secret = await ctx.controlDb.selectFrom("server_secrets").select("ciphertext").where("name", "=", leafKeySecretName(cert.id)).executeTakeFirst();
  if (!secret) throw new AuthNexusError("PKI_NOT_INITIALISED", { message: "The CP server certificate's key is missing." });
  const keyPem = openSecret(ctx.masterKey, Buffer.from(secret.ciphertext), leafKeySecretName(cert.id)).toString("utf8");
  const cas = await ctx.controlDb
    .selectFrom("certificate_authorities")
    .select(["profile", "cert_pem"])
    .where("status", "=", "active")
    .where("profile", "in", ["cp_server_ca", "cp_node_client_ca"])
    .execute();
  const pem = (profile: string) => {
    const found = cas.find((c) => c.profile === profile);
    if (!found) throw new AuthNexusError("PKI_NOT_INITIALISED", { message: `No active ${profile}.` });
    return found.cert_pem;
  };
  return { certPem: cert.cert_pem, keyPem, serverCaPem: pem("cp_server_ca"), nodeClientCaPem: pem("cp_node_client_ca") };
}
