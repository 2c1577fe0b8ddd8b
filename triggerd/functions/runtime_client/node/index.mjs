// triggerd's bundled Node.js runtime client (Node standard library only).
//
// Polls the Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API, runs the handler named by $_HANDLER
// (`file.export`, the file in $LAMBDA_TASK_ROOT: .js, .mjs or .cjs; CommonJS or ES module)
// and posts its result or error in the shapes Lambda's Node.js runtime uses. Handlers may be
// async (return a promise) or take a callback. console output is written as Lambda's Node.js
// runtime writes it: `<ISO time>\t<request id>\t<LEVEL>\t<message>`, line breaks in a message
// as `\r`.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { pathToFileURL } from "node:url";
import util from "node:util";

const [HOST, PORT] = process.env.AWS_LAMBDA_RUNTIME_API.split(":");
const BASE = "/2018-06-01/runtime";
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
let currentRequestId;

// ---- logging --------------------------------------------------------------------------------

function patchConsole() {
  const write = (level) => (...args) => {
    const message = util.format(...args).replace(/\n/g, "\r");
    process.stdout.write(`${new Date().toISOString()}\t${currentRequestId}\t${level}\t${message}\n`);
  };
  console.log = write("INFO");
  console.info = write("INFO");
  console.warn = write("WARN");
  console.error = write("ERROR");
  console.debug = write("DEBUG");
  console.trace = write("TRACE");
}

// ---- Runtime API ------------------------------------------------------------------------------

function request(method, urlPath, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port: PORT, method, path: BASE + urlPath, agent, headers: headers || {} },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

function errorObject(err) {
  if (err instanceof Error) {
    const trace = typeof err.stack === "string" ? err.stack.split("\n") : [];
    return { errorType: err.name || err.constructor?.name || "Error", errorMessage: err.message, trace };
  }
  let message;
  try {
    message = typeof err === "string" ? err : JSON.stringify(err);
  } catch {
    message = String(err);
  }
  return { errorType: typeof err, errorMessage: message ?? String(err), trace: [] };
}

async function postError(urlPath, error, logAs) {
  const body = JSON.stringify(error);
  process.stdout.write(
    `${new Date().toISOString()}\t${currentRequestId}\tERROR\t${logAs} \t` +
      JSON.stringify({ errorType: error.errorType, errorMessage: error.errorMessage, stack: error.trace }) + "\n",
  );
  await request("POST", urlPath, body, {
    "Content-Type": "application/json",
    "Lambda-Runtime-Function-Error-Type": error.errorType,
  });
}

// ---- handler loading ----------------------------------------------------------------------------

class UserError extends Error {
  constructor(name, message) {
    super(message);
    this.name = name;
  }
}

function findModule(root, modulePath) {
  for (const ext of [".js", ".mjs", ".cjs"]) {
    const file = path.resolve(root, modulePath + ext);
    if (fs.existsSync(file)) return file;
  }
  return null;
}

async function loadHandler() {
  const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
  const spec = process.env._HANDLER || "";
  const match = /^([^.]*?)\.([^/]+)$/.exec(path.basename(spec));
  if (!match) throw new UserError("Runtime.MalformedHandlerName", `Bad handler ${spec}`);
  const modulePath = path.join(path.dirname(spec), match[1]);
  const names = match[2].split(".");
  const file = findModule(root, modulePath);
  if (file === null) {
    throw new UserError("Runtime.ImportModuleError", `Error: Cannot find module '${modulePath}'`);
  }
  let mod;
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (err) {
    if (err instanceof SyntaxError) throw new UserError("Runtime.UserCodeSyntaxError", `${err.name}: ${err.message}`);
    if (err?.code === "MODULE_NOT_FOUND" || err?.code === "ERR_MODULE_NOT_FOUND") {
      throw new UserError("Runtime.ImportModuleError", `Error: ${err.message}`);
    }
    throw err;
  }
  let fn = mod;
  for (const name of names) fn = fn?.[name] ?? (fn === mod ? mod.default?.[name] : undefined);
  if (typeof fn !== "function") {
    throw new UserError("Runtime.HandlerNotFound", `${path.basename(spec)} is undefined or not exported`);
  }
  return fn;
}

// ---- invocations --------------------------------------------------------------------------------

function parseJson(value) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

function makeContext(headers) {
  const deadline = Number(headers["lambda-runtime-deadline-ms"]);
  const env = process.env;
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: headers["lambda-runtime-aws-request-id"],
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    identity: parseJson(headers["lambda-runtime-cognito-identity"]),
    clientContext: parseJson(headers["lambda-runtime-client-context"]),
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
  };
}

// Runs the handler: the result of its promise, or what it passes to its callback.
function run(handler, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (err, result) => {
      if (settled) return;
      settled = true;
      if (err !== undefined && err !== null) reject(err);
      else resolve(result);
    };
    const callback = (err, result) => {
      // With callbackWaitsForEmptyEventLoop, work the handler queued still runs first.
      if (context.callbackWaitsForEmptyEventLoop) setImmediate(() => settle(err, result));
      else settle(err, result);
    };
    context.done = callback;
    context.succeed = (result) => callback(null, result);
    context.fail = (err) => callback(err ?? "handled");
    let returned;
    try {
      returned = handler(event, context, callback);
    } catch (err) {
      settle(err);
      return;
    }
    if (returned && typeof returned.then === "function") returned.then((r) => settle(null, r), (e) => settle(e));
    else if (handler.length < 3) settle(null, returned);
  });
}

// An error thrown outside the handler's promise (in a timer, say) or a promise rejection
// nobody handled ends the invocation in flight with that error, and the process, as on Lambda.
function fatal(error) {
  const path = currentRequestId === undefined ? "/init/error" : `/invocation/${currentRequestId}/error`;
  postError(path, error, currentRequestId === undefined ? "Init Error" : "Invoke Error").finally(() => process.exit(129));
}

async function main() {
  patchConsole();
  process.on("uncaughtException", (err) => fatal(errorObject(err)));
  process.on("unhandledRejection", (reason) => {
    const error = errorObject(reason);
    fatal({ ...error, errorType: "Runtime.UnhandledPromiseRejection", errorMessage: `${error.errorType}: ${error.errorMessage}` });
  });
  let handler;
  try {
    handler = await loadHandler();
  } catch (err) {
    await postError("/init/error", errorObject(err), "Init Error");
    process.exit(1);
  }
  for (;;) {
    const next = await request("GET", "/invocation/next");
    const headers = next.headers;
    const requestId = headers["lambda-runtime-aws-request-id"];
    currentRequestId = requestId;
    if (headers["lambda-runtime-trace-id"]) process.env._X_AMZN_TRACE_ID = headers["lambda-runtime-trace-id"];
    else delete process.env._X_AMZN_TRACE_ID;
    const context = makeContext(headers);
    try {
      const event = JSON.parse(next.body.toString("utf8"));
      const result = await run(handler, event, context);
      const body = JSON.stringify(result === undefined ? null : result);
      await request("POST", `/invocation/${requestId}/response`, body, { "Content-Type": "application/json" });
    } catch (err) {
      await postError(`/invocation/${requestId}/error`, errorObject(err), "Invoke Error");
    }
  }
}

main();
