"""speechmax.maximize"""
