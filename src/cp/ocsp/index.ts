/** The CP's OCSP responder (Channel 4): request parsing, response building, the answerer and its HTTP listener. */
export {
  createOcspAnswerer,
  type OcspAnswer,
  type OcspAnswererOptions,
  type OcspAsyncResolver,
  type OcspFailureAnswer,
} from "./answerer.js";
export {
  type BuildOcspResponseOptions,
  buildOcspErrorResponse,
  buildOcspResponse,
  type OcspErrorStatus,
  type OcspResolver,
  type OcspSigner,
  type ResolvedIssuer,
} from "./build-response.js";
export {
  createOcspListener,
  OCSP_REQUEST_CONTENT_TYPE,
  OCSP_RESPONSE_CONTENT_TYPE,
  type OcspAppOptions,
} from "./http-handler.js";
export {
  type CertIdQuery,
  type DottedOid,
  type OcspHashAlgorithm,
  OcspRequestError,
  type ParsedOcspRequest,
  parseOcspRequest,
} from "./parse-request.js";
