"""speechmax.data"""
