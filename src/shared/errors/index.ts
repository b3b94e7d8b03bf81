export type { AuthNexusErrorOptions } from "./authnexus-error.js";
export { AuthNexusError, isAuthNexusError } from "./authnexus-error.js";
export type { ErrorCode } from "./catalogue.js";
export { ERROR_CATALOGUE } from "./catalogue.js";
