/** Runtime DB queries shared by the CP (business administration) and the node (auth flows). */
export { findUserEpoch, raiseUserAuthEpoch, type UserEpoch } from "./users.js";
