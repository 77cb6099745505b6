"""tzrec-tdm: tree-based deep retrieval (model, tree sampler, tree tools) as a tzrec plugin."""
