"""The suite engine, on pytest, and the only package that imports it: machines handed to suites
as fixtures, a deadline per test, outcomes told apart, artifacts, results.json and the summary;
`tbctl repro` runs a test many times. Imports every package but cli."""
