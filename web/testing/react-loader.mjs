// A module resolve hook for the hook's test: `react` is the tiny fake
// renderer beside this file (no React install needed).
export async function resolve(specifier, context, next) {
  if (specifier === 'react') return { url: new URL('./fake-react.mjs', import.meta.url).href, shortCircuit: true };
  return next(specifier, context);
}
