from kgengine.cli import run

run()
