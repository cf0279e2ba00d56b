// Small time-series charts of the last minutes, kept in the page (the server keeps no history).
// Each chart holds at most HISTORY_POINTS_MAX points per series: the oldest fall off.

/** Points one series keeps: five minutes at one point a second. */
export const HISTORY_POINTS_MAX = 300;

/** Series colours, distinguishable for the common colour-vision deficiencies (Okabe–Ito). */
const COLOURS = ['#0072b2', '#d55e00', '#009e73', '#cc79a7', '#e69f00', '#56b4e9'];

const CHART_HEIGHT_PX = 180;

export class TimeChart {
  /**
   * @param {HTMLElement} element where the chart goes
   * @param {string[]} labels one per series
   */
  constructor(element, labels) {
    this.element = element;
    this.labels = labels;
    this.times = [];
    this.values = labels.map(() => []);
    this.plot = new uPlot(this.options(), [this.times, ...this.values], element);
    this.resize = () => this.plot.setSize({ width: this.width(), height: CHART_HEIGHT_PX });
    window.addEventListener('resize', this.resize);
  }

  options() {
    return {
      width: this.width(),
      height: CHART_HEIGHT_PX,
      series: [
        {},
        ...this.labels.map((label, index) => ({
          label,
          stroke: COLOURS[index % COLOURS.length],
          width: 2,
          spanGaps: false,
        })),
      ],
      axes: [{}, { size: 60 }],
      scales: { y: { range: (_, min, max) => [Math.min(0, min), Math.max(1, max * 1.1)] } },
    };
  }

  width() {
    return Math.max(280, this.element.clientWidth || 360);
  }

  /**
   * Adds one point per series at `seconds` (Unix time); `null` leaves a gap.
   * @param {number} seconds
   * @param {(number|null)[]} points
   */
  push(seconds, points) {
    this.times.push(seconds);
    points.forEach((point, index) => this.values[index].push(point));
    if (this.times.length > HISTORY_POINTS_MAX) {
      this.times.shift();
      this.values.forEach((series) => series.shift());
    }
    this.plot.setData([this.times, ...this.values]);
  }

  destroy() {
    window.removeEventListener('resize', this.resize);
    this.plot.destroy();
  }
}
