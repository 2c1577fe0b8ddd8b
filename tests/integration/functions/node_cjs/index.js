// CommonJS handlers for the bundled Node.js runtime client.
"use strict";

exports.handler = async (event, context) => {
  console.log("event", JSON.stringify(event));
  console.warn("two\nlines");
  if (event.throw) {
    class ValidationError extends Error {}
    const err = new ValidationError("bad input");
    err.name = "ValidationError";
    throw err;
  }
  if (event.sleep_ms) await new Promise((r) => setTimeout(r, event.sleep_ms));
  return {
    awsRequestId: context.awsRequestId,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    invokedFunctionArn: context.invokedFunctionArn,
    memoryLimitInMB: context.memoryLimitInMB,
    logGroupName: context.logGroupName,
    logStreamName: context.logStreamName,
    remaining: context.getRemainingTimeInMillis(),
    callbackWaitsForEmptyEventLoop: context.callbackWaitsForEmptyEventLoop,
    clientContext: context.clientContext,
    identity: context.identity,
    traceId: process.env._X_AMZN_TRACE_ID,
    nodePath: process.env.NODE_PATH,
    executionEnv: process.env.AWS_EXECUTION_ENV,
  };
};

exports.callback = (event, context, callback) => {
  setTimeout(() => {
    if (event.fail) callback(new TypeError("callback failure"));
    else callback(null, { via: "callback", n: event.n });
  }, 5);
};

exports.stray = async (event) => {
  setTimeout(() => {
    throw new RangeError("thrown in a timer");
  }, 1);
  await new Promise((r) => setTimeout(r, 1000));
  return "not reached";
};
