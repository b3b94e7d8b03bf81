/**
 * Prometheus metrics: one registry per process role (a CP, a node), never prom-client's global
 * default registry, so several CPs and nodes in one process (tests, `authnexus dev`) each report
 * their own. Imports nothing from cp/ or node/.
 *
 * Hot paths (the business port) use FastCounter and FastHistogram: a labelled series is looked
 * up in nested maps without building a key, and an observation is a few additions on numbers
 * that already exist. prom-client's own Counter/Histogram hash their labels into a string on
 * every call; they are used where calls are rare (admin API, node API, checkin loops).
 * Gauges that describe state are read when Prometheus scrapes (`collect`), never kept up to date.
 */
import client from "prom-client";

/** Prometheus' text exposition format, version 0.0.4. */
export const PROMETHEUS_CONTENT_TYPE: string = client.Registry.PROMETHEUS_CONTENT_TYPE;

/** Latency buckets in seconds: 100 µs to 10 s. */
export const LATENCY_BUCKETS_SECONDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];

let processRegistry: client.Registry | null = null;

/**
 * The process's own numbers (CPU, memory, event loop lag, GC, handles), collected once per
 * process whatever the number of roles in it: prom-client's collectors start observers and an
 * event-loop monitor that are never stopped, so one set serves every role's scrape.
 */
function processMetrics(): client.Registry {
  if (!processRegistry) {
    processRegistry = new client.Registry();
    client.collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

export interface MetricsOptions {
  /** Add the process metrics (CPU, memory, event loop, GC) to the exposition; default true. */
  processMetrics?: boolean;
}

type GaugeCollect = (gauge: client.Gauge) => void | Promise<void>;

/** A role's metrics: its registry, the factories its definitions use, and the exposition. */
export class MetricsRegistry {
  readonly registry = new client.Registry();
  private readonly withProcess: boolean;

  constructor(options: MetricsOptions = {}) {
    this.withProcess = options.processMetrics ?? true;
  }

  counter<L extends string>(name: string, help: string, labelNames: readonly L[] = []): client.Counter<L> {
    return new client.Counter<L>({ name, help, labelNames, registers: [this.registry] });
  }

  histogram<L extends string>(name: string, help: string, labelNames: readonly L[], buckets: number[]): client.Histogram<L> {
    return new client.Histogram<L>({ name, help, labelNames, buckets, registers: [this.registry] });
  }

  /** A gauge set when scraped: `collect` reads the state and sets the gauge's series. */
  gauge<L extends string>(name: string, help: string, labelNames: readonly L[], collect: GaugeCollect): client.Gauge<L> {
    return new client.Gauge<L>({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        return collect(this as client.Gauge);
      },
    });
  }

  fastCounter(name: string, help: string, labelNames: readonly string[]): FastCounter {
    const metric = new FastCounter(name, help, labelNames);
    this.registry.registerMetric(metric as unknown as client.Metric);
    return metric;
  }

  fastHistogram(name: string, help: string, labelNames: readonly string[], buckets: readonly number[]): FastHistogram {
    const metric = new FastHistogram(name, help, labelNames, buckets);
    this.registry.registerMetric(metric as unknown as client.Metric);
    return metric;
  }

  /** The text exposition: this role's metrics, then the process's. */
  async exposition(): Promise<string> {
    const own = await this.registry.metrics();
    return this.withProcess ? own + (await processMetrics().metrics()) : own;
  }
}

/** Series looked up by their label values (one map level per label), created on first use. */
class SeriesTable<S> {
  private readonly root = new Map<string, unknown>();

  constructor(
    readonly labelNames: readonly string[],
    private readonly create: (labels: Record<string, string>) => S,
  ) {
    if (labelNames.length < 1 || labelNames.length > 3) throw new RangeError("fast metrics take one to three labels");
  }

  readonly all: S[] = [];

  at(a: string, b = "", c = ""): S {
    let level = this.root;
    const depth = this.labelNames.length;
    for (let i = 0; i < depth - 1; i++) {
      const key = i === 0 ? a : b;
      let next = level.get(key) as Map<string, unknown> | undefined;
      if (!next) {
        next = new Map();
        level.set(key, next);
      }
      level = next;
    }
    const last = depth === 1 ? a : depth === 2 ? b : c;
    let series = level.get(last) as S | undefined;
    if (series === undefined) {
      const values = [a, b, c];
      series = this.create(Object.fromEntries(this.labelNames.map((name, i) => [name, values[i] as string])));
      level.set(last, series);
      this.all.push(series);
    }
    return series;
  }
}

interface CounterSeries {
  labels: Record<string, string>;
  value: number;
}

/** A counter for hot paths: `inc(a, b)` is two map lookups and an addition. */
export class FastCounter {
  readonly type = "counter";
  readonly aggregator = "sum";
  private readonly series: SeriesTable<CounterSeries>;

  constructor(
    readonly name: string,
    readonly help: string,
    labelNames: readonly string[],
  ) {
    this.series = new SeriesTable(labelNames, (labels) => ({ labels, value: 0 }));
  }

  inc(a: string, b?: string, c?: string): void {
    this.series.at(a, b, c).value += 1;
  }

  /** The value of one series (tests, status pages). */
  value(a: string, b?: string, c?: string): number {
    return this.series.at(a, b, c).value;
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string>; value: number }[] } {
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: this.series.all.map((s) => ({ labels: s.labels, value: s.value })),
    };
  }
}

interface HistogramSeries {
  labels: Record<string, string>;
  counts: Float64Array;
  sum: number;
  count: number;
}

/** A histogram for hot paths: a lookup, a short scan of the bounds and three additions. */
export class FastHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  private readonly series: SeriesTable<HistogramSeries>;
  private readonly bounds: Float64Array;

  constructor(
    readonly name: string,
    readonly help: string,
    labelNames: readonly string[],
    buckets: readonly number[],
  ) {
    this.bounds = Float64Array.from([...buckets].sort((x, y) => x - y));
    this.series = new SeriesTable(labelNames, (labels) => ({ labels, counts: new Float64Array(this.bounds.length), sum: 0, count: 0 }));
  }

  observe(value: number, a: string, b?: string, c?: string): void {
    const series = this.series.at(a, b, c);
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    if (i < bounds.length) series.counts[i] = (series.counts[i] as number) + 1;
    series.sum += value;
    series.count += 1;
  }

  get(): {
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: { metricName: string; labels: Record<string, string | number>; value: number }[];
  } {
    const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
    for (const s of this.series.all) {
      let cumulative = 0;
      this.bounds.forEach((bound, i) => {
        cumulative += s.counts[i] as number;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...s.labels, le: bound }, value: cumulative });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { ...s.labels, le: "+Inf" }, value: s.count });
      values.push({ metricName: `${this.name}_sum`, labels: s.labels, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: s.labels, value: s.count });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

/** "2xx", "4xx"…: the status class label of an HTTP answer. */
export function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : "other";
}

/** Keeps an expensive reading (a database query) for `maxAgeMs`, shared by concurrent scrapes. */
export function cachedReading<T>(now: () => number, maxAgeMs: number, read: () => Promise<T>): () => Promise<T> {
  let last: { at: number; value: Promise<T> } | null = null;
  return () => {
    const at = now();
    if (last && at - last.at < maxAgeMs) return last.value;
    const value = read();
    last = { at, value };
    // A failed reading is not kept: the next scrape tries again.
    value.catch(() => {
      if (last?.value === value) last = null;
    });
    return value;
  };
}
