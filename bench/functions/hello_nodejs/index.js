// The Node.js hello function of the cold-start benchmark (bundled Node.js runtime client).
exports.handler = async (event) => ({ hello: "world", n: event.n });
