from kgengine.cli import app

app(prog_name="kgengine")
