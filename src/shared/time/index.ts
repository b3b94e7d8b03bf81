/** Time: the one source of "now" (Clock) and of timers and deadlines (Scheduler). */
export { type Clock, ManualClock, systemClock } from "./clock.js";
export {
  atEndOfTurn,
  type CancelTimer,
  deadlineSignal,
  delay,
  every,
  ManualScheduler,
  realScheduler,
  type Scheduler,
  settle,
  systemScheduler,
  type TimerOptions,
} from "./scheduler.js";
