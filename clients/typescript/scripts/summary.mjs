// Prints vitest's JSON report as one plain `N passed, N failed` line, which
// every reader of a CI log understands (vitest's own summary is coloured
// and split over lines). Exits non-zero when the report is missing.
import { readFileSync } from "node:fs";

const [file, label] = process.argv.slice(2);
let report;
try {
  report = JSON.parse(readFileSync(file, "utf8"));
} catch (e) {
  console.log(`${label}: no test report (${e.message})`);
  process.exit(1);
}
const skipped = report.numPendingTests + report.numTodoTests;
console.log(`${label}: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${skipped} skipped`);
