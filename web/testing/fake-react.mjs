// Just enough of React's hooks to run one hook: renderHook(fn) renders it,
// re-renders on state changes, runs effects after each render (cleaning up
// first when deps change) and runs every cleanup on unmount.
let current = null;

export function renderHook(hook, initialProps) {
  const inst = { hooks: [], i: 0, props: initialProps, result: undefined, effects: [], mounted: true };
  const render = () => {
    inst.i = 0;
    inst.effects = [];
    current = inst;
    try {
      inst.result = hook(inst.props);
    } finally {
      current = null;
    }
    for (const e of inst.effects) {
      e.cell.cleanup?.();
      e.cell.cleanup = e.fn() || undefined;
    }
  };
  inst.render = render;
  render();
  return {
    get result() {
      return inst.result;
    },
    rerender(props) {
      inst.props = props;
      render();
    },
    unmount() {
      inst.mounted = false;
      for (const cell of inst.hooks) cell?.cleanup?.();
    },
  };
}

function cell(init) {
  const inst = current;
  if (!inst) throw new Error('hook called outside a render');
  const i = inst.i++;
  if (!(i in inst.hooks)) inst.hooks[i] = init();
  return [inst, inst.hooks[i]];
}

const same = (a, b) => a && b && a.length === b.length && a.every((x, i) => Object.is(x, b[i]));

export function useState(initial) {
  const [inst, c] = cell(() => ({ value: typeof initial === 'function' ? initial() : initial }));
  const set = (v) => {
    const next = typeof v === 'function' ? v(c.value) : v;
    if (Object.is(next, c.value) || !inst.mounted) return;
    c.value = next;
    inst.render();
  };
  return [c.value, set];
}

export function useRef(initial) {
  const [, c] = cell(() => ({ current: initial }));
  return c;
}

export function useEffect(fn, deps) {
  const [inst, c] = cell(() => ({ deps: undefined, cleanup: undefined }));
  if (deps && same(c.deps, deps)) return;
  c.deps = deps;
  inst.effects.push({ cell: c, fn });
}

export function useCallback(fn, deps) {
  const [, c] = cell(() => ({ deps: undefined, fn }));
  if (!same(c.deps, deps)) {
    c.deps = deps;
    c.fn = fn;
  }
  return c.fn;
}
