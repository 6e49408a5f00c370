"""Objects bound to the thread that made them (sqlite3 connections by default): with
PIPELINE_PLUGIN_SCORING_THREADS=1, init() and run() share one thread."""
import json
import sqlite3

db = None


def init():
    global db
    db = sqlite3.connect(":memory:")
    db.execute("create table t (x integer)")
    db.executemany("insert into t values (?)", [(1,), (2,), (3,)])


def run(raw_data):
    k = json.loads(raw_data)["k"]
    return {"sum": db.execute("select sum(x) * ? from t", (k,)).fetchone()[0]}
