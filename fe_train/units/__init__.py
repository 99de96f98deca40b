"""Stage-3 speech units made from speech: replies are spoken (espeak-ng) and a speech tokenizer turns the speech
into discrete units. ``tokenizer`` is the plug-in point, ``kmeans`` the built-in tokenizer, ``step`` the
``fe-shards units fit`` / ``make`` steps and ``commands`` their command line; ``docs/units.md`` has the workflow."""
