# a layer's files
