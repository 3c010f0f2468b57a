"""The suite engine, on pytest, and the only package that imports it: machines handed to suites
as fixtures, a deadline per test, findings, artifacts, results.json and the summary. Imports
every package but cli."""
