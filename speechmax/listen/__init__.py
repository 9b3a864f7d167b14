"""speechmax.listen"""
