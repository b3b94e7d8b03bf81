/**
 * Lua syntax checking without running anything: the CP checks a cloud function's script when
 * it is saved, and the sandbox reports a body that fails to compile the same way. The script
 * is only compiled (lua_load in text mode, as the sandbox compiles it) in a throwaway engine
 * with no library loaded, under a memory cap, and the engine is closed at once.
 */
import { LuaFactory } from "wasmoon";
import { MAX_CLOUD_FUNCTION_SCRIPT_BYTES } from "../config/defaults.js";

/** The chunk name every script is compiled under: errors read `fn:12: <message>`. */
export const LUA_CHUNK_NAME = "fn";
/** Memory one compilation may use (bytes): far above what a script of the largest allowed size needs. */
export const COMPILE_MEMORY_LIMIT_BYTES = 32 * 1024 * 1024;

export type LuaSyntaxCheck = { ok: true } | { ok: false; line: number | null; message: string };

const LUA_OK = 0;
const POSITIONED = new RegExp(`^${LUA_CHUNK_NAME}:(\\d+): ([\\s\\S]*)$`);

/** A compiler message split into its line and its text (`fn:3: 'end' expected` → 3, "'end' expected"). */
export function parseLuaError(raw: string): { line: number | null; message: string } {
  const match = POSITIONED.exec(raw);
  if (!match) return { line: null, message: raw };
  return { line: Number(match[1]), message: match[2] ?? "" };
}

let factory: LuaFactory | null = null;

/** The process's one LuaFactory for syntax checks (the wasm module is loaded once, engines are cheap). */
function syntaxFactory(): LuaFactory {
  factory ??= new LuaFactory();
  return factory;
}

/** Checks `script` compiles as a Lua 5.4 text chunk; never executes it. */
export async function checkLuaSyntax(script: string): Promise<LuaSyntaxCheck> {
  const bytes = Buffer.byteLength(script, "utf8");
  if (bytes > MAX_CLOUD_FUNCTION_SCRIPT_BYTES) {
    return { ok: false, line: null, message: `the script is ${bytes} bytes; at most ${MAX_CLOUD_FUNCTION_SCRIPT_BYTES} are allowed` };
  }
  const engine = await syntaxFactory().createEngine({
    openStandardLibs: false,
    injectObjects: false,
    enableProxy: false,
    traceAllocations: true,
  });
  try {
    const global = engine.global;
    global.setMemoryMax(global.getMemoryUsed() + COMPILE_MEMORY_LIMIT_BYTES);
    const { lua, address } = global;
    const module = lua.module;
    const length = module.lengthBytesUTF8(script);
    const buffer = module._malloc(length + 1);
    try {
      module.stringToUTF8(script, buffer, length + 1);
      const status = lua.luaL_loadbufferx(address, buffer, length, `=${LUA_CHUNK_NAME}`, "t");
      if (status === LUA_OK) return { ok: true };
      return { ok: false, ...parseLuaError(lua.lua_tolstring(address, -1, null)) };
    } finally {
      module._free(buffer);
    }
  } finally {
    engine.global.close();
  }
}
