/** Runtime DB queries shared by the CP (business administration) and the node (auth flows). */
export { activateCard, CARD_STATUSES, type CardStatus, findCardByHash, findCardById, insertCards } from "./cards.js";
export { bindDevice, listDeviceBindings, removeDeviceBinding } from "./devices.js";
export { consumeInvite, findInviteByHash } from "./invites.js";
export {
  findSessionForLogin,
  insertSession,
  resumeSession,
  revokeCardSessions,
  revokeSession,
  revokeUserSessions,
  type SessionForLogin,
  touchSession,
} from "./sessions.js";
export { type LoginLogEntry, type UserAuditEntry, writeLoginLog, writeUserAudit } from "./trails.js";
export {
  applyUserVariableWrites,
  listUserVariables,
  USER_VARIABLE_KEY,
  type UserVariableLimits,
  type UserVariableWrite,
  userVariableLimits,
} from "./user-variables.js";
export {
  findUserById,
  findUserByName,
  findUserEpoch,
  insertUser,
  raiseUserAuthEpoch,
  recordUserLogin,
  USER_STATUSES,
  type UserEpoch,
  type UserStatus,
} from "./users.js";
