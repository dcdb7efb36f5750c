// JSON text as the Rust SDK writes it, for JavaScript projections: key order kept, and numbers
// marked as floats written with a decimal point. No import of the contract, so that Node can run
// its test (`node sdk/json.test.mjs`).

/** A number kept a float when integral (`100` is written `100.0`), as Rust's `f64` is. */
export class Float {
  constructor(value) {
    this.value = value;
  }
}

function floatText(number) {
  const text = JSON.stringify(number);
  return Number.isInteger(number) && !text.includes('e') ? `${text}.0` : text;
}

/** JSON text as `json` writes it, walked in JavaScript: the reference, and the rare cases. */
export function walked(value) {
  if (value instanceof Float) return floatText(value.value);
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'bigint') return value.toString();
  if (Array.isArray(value)) return `[${value.map(walked).join(',')}]`;
  if (typeof value === 'object') {
    return `{${Object.keys(value).map((k) => `${JSON.stringify(k)}:${walked(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** Stands for a `Float` or a bigint in `JSON.stringify`'s text until it is replaced. */
const MARK = '\u0000refold:number:';
const MARKED = /"\\u0000refold:number:([^"]*)"/g;

/**
 * JSON text, with `Float` numbers written with a decimal point. Key order is kept. Written by
 * the engine's own `JSON.stringify`, with the numbers it cannot write marked and replaced after;
 * what it would write otherwise than `walked` (a `toJSON` method, a function, a symbol, a boxed
 * primitive, an array with holes, a string that looks like a mark) is written by `walked`.
 */
export function json(value) {
  let marks = 0;
  let same = true;
  const text = JSON.stringify(value, function (key, v) {
    if (
      v !== this[key] ||
      typeof v === 'function' ||
      typeof v === 'symbol' ||
      v instanceof Number ||
      v instanceof String ||
      v instanceof Boolean ||
      (Array.isArray(v) && Object.keys(v).length !== v.length)
    ) {
      same = false;
      return null;
    }
    if (v instanceof Float) {
      marks++;
      return MARK + floatText(v.value);
    }
    if (typeof v === 'bigint') {
      marks++;
      return MARK + v.toString();
    }
    return v === undefined ? null : v;
  });
  if (!same) return walked(value);
  if (marks === 0) return text;
  let replaced = 0;
  const out = text.replace(MARKED, (_, number) => {
    replaced++;
    return number;
  });
  return replaced === marks ? out : walked(value);
}
