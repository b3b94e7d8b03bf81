/**
 * The AuthNexus SDK for TypeScript and JavaScript programs (`import … from "authnexus/sdk"`):
 * connect to a node of a deployment over mutual TLS with the node's OCSP staple verified, log
 * users in, stay logged in, receive pushes. See README.md ("Logging a user in") and
 * docs/protocol.md.
 */
export { AuthNexusError, type ErrorCode, isAuthNexusError } from "../shared/errors/index.js";
export {
  AuthNexusClient,
  type ConnectedNode,
  type ConnectOptions,
  type Push,
  type Registration,
  SDK_VERSION,
  type Session,
} from "./client.js";
export { loadSdkConfig, type NodeAddress, type SdkConfig, type TrustPolicy } from "./config.js";
export { checkPins, checkStaple, type StapleInput, type StapleVerdict, spkiPin } from "./trust.js";
