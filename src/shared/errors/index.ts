export type { AuthNexusErrorOptions } from "./authnexus-error.js";
export { AuthNexusError, isAuthNexusError } from "./authnexus-error.js";
export type { ErrorCode } from "./catalogue.js";
export { ERROR_CATALOGUE, errorCodeForWire, isErrorCode } from "./catalogue.js";
export { normalizeError, type PublicError, publicError } from "./normalize.js";
export { errorFromProtocol, errorToProtocol, type ProtocolError } from "./to-protocol.js";
export { type FieldProblem, fieldInvalid, parseOrThrow, validationFailed, zodProblems } from "./validation.js";
