"""How the supernet is searched: the bilevel steps, the loop and its run-directory records."""
