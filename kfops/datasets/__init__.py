"""Dataset plug-ins. ``flights`` (2013 NYC flights) is the example; a project brings its own
through ``dataset.*`` in kfops.yaml. Nothing outside this package knows any dataset.
"""
