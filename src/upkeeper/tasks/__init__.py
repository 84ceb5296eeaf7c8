"""Built-in task families.  Every module below this package is imported by the registry.

One module (or sub-package) per family; a family registers its tasks with
``@task`` when imported and never imports another family.
"""
