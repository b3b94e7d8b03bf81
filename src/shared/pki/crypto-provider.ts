/**
 * Side-effect module: every pki file imports this first.
 *
 * @peculiar/x509 resolves its algorithm registry through tsyringe, which needs the
 * reflect-metadata polyfill loaded before the library is evaluated, and it has no crypto of
 * its own until a WebCrypto provider is registered. Doing both here, once, means no caller
 * can forget either step.
 */
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto);

export { webcrypto, x509 };
