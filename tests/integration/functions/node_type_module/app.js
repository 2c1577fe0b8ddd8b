// An ES module by package.json "type": "module".
export async function handler(event) {
  return { module: typeof require === "undefined" ? "esm" : "cjs", n: event.n };
}
