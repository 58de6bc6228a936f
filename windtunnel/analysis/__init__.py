"""Analysis of finished runs: the run-folder reader (`runs`), plots, coord check and transfer check."""
