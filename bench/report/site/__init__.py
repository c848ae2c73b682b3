"""A static, browsable site of a store's results (`bench report`), built from records alone."""
