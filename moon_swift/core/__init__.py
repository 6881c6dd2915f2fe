"""What every layer shares and nothing above it defines: the error users see, the one image loader, the
field-markup / token-type contract between data, template and model, and the embedding settings a
checkpoint carries. Imports no swift and no torch."""
