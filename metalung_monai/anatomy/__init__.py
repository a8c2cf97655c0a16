"""(filled in as the stage is built)"""
